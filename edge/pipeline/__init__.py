"""Per-file stages from a path to one recorded result (intake, decode, gate, cells, model, domain)."""
