"""``python -m lit_commeff``: the main job, the same as the ``lit-commeff`` command (a Hydra application)."""

from lit_commeff.cli.main import main

if __name__ == "__main__":
    main()
