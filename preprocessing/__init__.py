"""hpcsr preprocessing: raw precipitation (Comephore tar/GeoTIFF or CF netCDF) -> HR store (HDF5) ->
per-factor LR shards (HDF5), in parallel over MPI ranks, resumable; plus a synthetic Comephore
generator. Imports `hpcsr`, never the reverse. Entry point: `hpcsr-preprocess` (preprocessing.cli).
The on-disk layout is documented in `hpcsr.data.store`, which also reads it back."""
