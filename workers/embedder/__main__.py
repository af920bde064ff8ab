import uvloop

from workers.embedder.app import app

if __name__ == "__main__":
    uvloop.run(app.run())
