import uvloop

from workers.indexer.app import app

if __name__ == "__main__":
    uvloop.run(app.run())
