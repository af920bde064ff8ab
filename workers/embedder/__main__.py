from olympus.worker import run
from workers.embedder.app import create_app

if __name__ == "__main__":
    run(create_app())
