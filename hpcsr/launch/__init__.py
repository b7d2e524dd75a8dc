"""Launching: factor grids to Slurm job arrays through submitit, or local processes (`hpcsr-launch`).

    hpcsr-launch plan launcher=slurm cluster=example_site grid=paper          # dry run: table + sbatch scripts
    hpcsr-launch launcher=slurm cluster=<site> launcher.stages=[preprocess,mean,diffusion,sample]
    hpcsr-launch launcher=slurm grid=product grid.s=[5,10] grid.t=[1,3] --wait
    hpcsr-launch launcher=slurm grid=list +grid.parents={s10_t3:s10_t1}      # transfer chains
    hpcsr-launch status [--folder DIR] [--launch N] [--wait];  hpcsr-launch cancel [...]

Modules: config (schemas), grid (pairs, transfer levels), plan (arrays, dependencies), sbatch
(parameters, scripts, sinfo check), stages (the element every rank runs, stage adapters), probe (a
checkpointed stand-in workload), slurm_backend / local_queue (the two backends), submit
(submission, states, wait, cancel), report (text), records (launch folders), snapshot (code copy),
job (the per-rank job runner).

MPI stages (preprocessing) start one process per rank through srun: set cluster.mpi to the site's
PMI (pmix, pmi2) so mpi4py finds its partners; DeepSpeed stages find their ranks from Slurm's
variables (hpcsr.dist) and need no MPI.
"""
