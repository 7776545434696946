"""Executors: where a stage's work runs. `local` (the default) is the stage's own code in
this process; `ray` fans the same step functions out over a Ray cluster (`ray_filter`,
`ray_complete`), with the same decisions. Ray is an optional extra (`make install
EXTRAS=ray`); nothing here imports it until a stage runs with `executor: ray`."""
