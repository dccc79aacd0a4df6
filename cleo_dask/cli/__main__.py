"""``python -m cleo_dask.cli``."""
from cleo_dask.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
