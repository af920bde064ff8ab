from olympus.settings import refuse_to_start_on_bad_settings
from olympus.worker import run
from workers.indexer.app import create_app

if __name__ == "__main__":
    with refuse_to_start_on_bad_settings("the indexer"):
        app = create_app()
    run(app)
