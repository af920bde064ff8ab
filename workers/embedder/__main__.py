import asyncio

from workers.embedder.app import app

if __name__ == "__main__":
    asyncio.run(app.run())
