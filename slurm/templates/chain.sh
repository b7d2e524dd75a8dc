#!/usr/bin/env bash
# Submit preprocess -> mean -> diffusion for a factor grid with plain sbatch, chained the way
# hpcsr-launch chains them: the preprocess job once (afterok), then one array per training stage
# where element i waits for element i of the stage before (aftercorr), so a slow pair never holds
# back the others. Run from the folder that should hold runs/ and logs/.
#
#   bash slurm/templates/chain.sh [hydra overrides for hpcsr train ...]
#
# Preprocessing runs with MPI over the job's ranks: `srun --mpi=pmix` (or pmi2, as the site
# documents; with MPICH from PyPI use pmi2) starts hpcsr-preprocess once per rank, and the ranks
# split the time ranges among themselves. Inside an allocation, `mpirun -n $SLURM_NTASKS
# hpcsr-preprocess ...` works too when mpirun belongs to the MPI that mpi4py was built against.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python}
DATA=${DATA:-data/default}            # preprocessing output: hr.h5 and shards/
PAIRS=${PAIRS:-1x3,10x1,10x3,25x6}    # must list the same pairs as PAIRS in train_array.sbatch
INPUT=${INPUT:-}                      # e.g. "--comephore /data/comephore"; empty: synthetic data
mkdir -p logs

pre=$(sbatch --parsable --job-name=hpcsr-preprocess --nodes=1 --ntasks-per-node=16 --cpus-per-task=1 \
  --time=240 --output=logs/%x_%j.out --error=logs/%x_%j.err \
  --wrap "srun --mpi=pmix $PYTHON -m preprocessing.cli all --out $DATA --pairs $PAIRS $INPUT")
mean=$(sbatch --parsable --dependency="afterok:$pre" --export=ALL,STAGE=mean \
  "$HERE/train_array.sbatch" "data_dir=$DATA" "$@")
diffusion=$(sbatch --parsable --dependency="aftercorr:$mean" --export=ALL,STAGE=diffusion \
  "$HERE/train_array.sbatch" "data_dir=$DATA" "$@")
echo "preprocess $pre -> mean $mean -> diffusion $diffusion"
echo "follow: squeue -j $pre,$mean,$diffusion; tail -f logs/hpcsr-train_${mean}_0.out"
echo "cancel: scancel $pre $mean $diffusion"
