import asyncio

from workers.indexer.app import app

if __name__ == "__main__":
    asyncio.run(app.run())
