from olympus.worker import run
from workers.generator.app import create_app

if __name__ == "__main__":
    run(create_app())
