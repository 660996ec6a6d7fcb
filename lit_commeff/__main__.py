"""``python -m lit_commeff``: the main job (for now the compression demo)."""

from lit_commeff.cli.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
