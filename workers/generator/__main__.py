from olympus.settings import refuse_to_start_on_bad_settings
from olympus.worker import run
from workers.generator.app import create_app

if __name__ == "__main__":
    with refuse_to_start_on_bad_settings("the generator"):
        app = create_app()
    run(app)
