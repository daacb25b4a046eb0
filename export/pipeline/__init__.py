"""One export, from settings to a verified bundle: `plan` (which files), `job` (one file), `build` (the run in
progress), `convert_job` (one job to bytes, the leaf a child process imports), `conversions` (fp32 files reused, child
processes), `verify`, `self_describe`, `bundle_writer` and `export_bundle` (the steps, the public entry)."""
