"""The `clipedge` command: `main` (parser, process setup), `commands` (what each runtime subcommand does), `batches`
(the batch loop with --on-error), `registry` (commands other packages add, such as the exporter's), `arg_types`
(the integer argparse types every command shares)."""
