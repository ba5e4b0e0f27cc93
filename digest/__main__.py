"""`python -m digest` runs the same CLI as the `digest` console script."""

from digest.cli import main

if __name__ == "__main__":  # a sending process imports this module again: it must not run main
    main()
