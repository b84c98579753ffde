"""Download the models of your projects into the cache: `python download_models.py --all` (see --help)."""

from runpod_model_manager.cli import main

if __name__ == "__main__":
    main()
