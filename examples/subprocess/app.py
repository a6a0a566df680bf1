"""Two command queues, a Python program and a shell script, run until the queues are empty.

python examples/subprocess/app.py     # stores its jobs in ./forebay.db
"""

import asyncio
import sys
from pathlib import Path

from forebay import Forebay
from forebay.testing import drain

HERE = Path(__file__).resolve().parent

app = Forebay("sqlite:///forebay.db")
app.command(
    "words",
    [sys.executable, str(HERE / "ingest.py")],
    permanent_exit_codes=[3],  # an empty document: retrying cannot help
    timeout_s=60,
    max_attempts=3,
)
app.command("checksums", ["sh", str(HERE / "checksum.sh")], timeout_s=10)


async def main() -> None:
    async with app:
        jobs = [
            await app.enqueue("words", {"name": "a.txt", "text": "the quick brown fox"}),
            await app.enqueue("words", {"name": "empty.txt", "text": ""}),
            await app.enqueue("checksums", {"name": "a.txt"}),
        ]
        await drain(app)
        for job in jobs:
            done = await app.get_job(job.id)
            print(f"{done.queue} job {done.id}: {done.state}, result {done.result}")
            if done.error:
                print(f"  error: {done.error}")


if __name__ == "__main__":
    asyncio.run(main())
