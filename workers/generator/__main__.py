import uvloop

from workers.generator.app import app

if __name__ == "__main__":
    uvloop.run(app.run())
