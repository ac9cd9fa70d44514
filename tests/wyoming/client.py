"""Wyoming transcriptions through the official `wyoming` package's client.

Usage:
    client.py describe PORT
    client.py transcribe PORT JOBS_JSON

`describe` sends `describe` and prints the `info` event's data as JSON.

`transcribe` runs the jobs in JOBS_JSON (a list) at once, each on its own
connection with `AsyncTcpClient`, as Home Assistant does: `transcribe`
(the job's "transcribe" object as its data), `audio-start`, the job's raw
PCM file in `audio-chunk`s of "chunk_ms" (default 20), `audio-stop`; then it
reads events until `transcript-stop` (or `transcript` when "streaming" is
false), an `error`, or the end of the connection. With "realtime" true the
chunks go out at the audio's pace, else as fast as the server takes them.
Job keys: file, rate, width, channels, and optionally transcribe, chunk_ms,
realtime, streaming. Prints one JSON list, a result per job:

    {"events": [[type, data], ...], "stop_to_transcript_ms": float|null,
     "closed": bool}

Exits 0 unless a client raised (traceback on stderr). Run by
tests/wyoming.rs.
"""

import asyncio
import json
import sys
import time

from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe

HOST = "127.0.0.1"
# Bound on any one read, so a silent server fails the test instead of hanging.
READ_TIMEOUT = 60


async def describe(port: int) -> dict:
    async with AsyncTcpClient(HOST, port) as client:
        await client.write_event(Describe().event())
        while True:
            event = await asyncio.wait_for(client.read_event(), READ_TIMEOUT)
            if event is None:
                raise RuntimeError("the server closed without an info event")
            if event.type == "info":
                return event.data


async def transcribe(port: int, job: dict) -> dict:
    with open(job["file"], "rb") as f:
        audio = f.read()
    rate, width, channels = job["rate"], job["width"], job["channels"]
    chunk_bytes = rate * width * channels * job.get("chunk_ms", 20) // 1000
    chunk_bytes -= chunk_bytes % (width * channels)
    realtime = job.get("realtime", False)
    streaming = job.get("streaming", True)
    events = []
    stopped_at = None
    latency = None
    closed = False
    async with AsyncTcpClient(HOST, port) as client:
        await client.write_event(Transcribe(**job.get("transcribe", {})).event())
        await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
        started = time.monotonic()
        sent = 0
        for at in range(0, len(audio), chunk_bytes):
            chunk = audio[at : at + chunk_bytes]
            await client.write_event(
                AudioChunk(rate=rate, width=width, channels=channels, audio=chunk).event()
            )
            sent += len(chunk)
            if realtime:
                due = started + sent / (rate * width * channels)
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        await client.write_event(AudioStop().event())
        stopped_at = time.monotonic()
        while True:
            event = await asyncio.wait_for(client.read_event(), READ_TIMEOUT)
            if event is None:
                closed = True
                break
            events.append([event.type, event.data])
            if event.type == "transcript" and latency is None:
                latency = (time.monotonic() - stopped_at) * 1000.0
            if event.type == "error":
                break
            if event.type == ("transcript-stop" if streaming else "transcript"):
                break
    return {"events": events, "stop_to_transcript_ms": latency, "closed": closed}


async def main() -> int:
    command, port = sys.argv[1], int(sys.argv[2])
    if command == "describe":
        print(json.dumps(await describe(port)))
        return 0
    if command == "transcribe":
        jobs = json.loads(sys.argv[3])
        results = await asyncio.gather(*(transcribe(port, job) for job in jobs))
        print(json.dumps(results))
        return 0
    print(f"unknown command {command}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
