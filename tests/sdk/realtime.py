"""One real-time session through the official Soniox Python SDK.

Usage: realtime.py WS_URL API_KEY AUDIO_FILE SAMPLE_RATE

Streams AUDIO_FILE (raw pcm_s16le, mono, SAMPLE_RATE Hz) to WS_URL with the
SDK's own real-time API, as a Soniox customer would (only the WebSocket URL
points elsewhere), and prints one JSON object on stdout:

    {"finals": [[text, start_ms], ...], "non_finals": N,
     "errors": [[code, message], ...], "finished": bool, "exception": str|null}

Exits 0 if the session finished without an error, 2 if the server sent an
error frame, 3 if the SDK raised SonioxRealtimeError (its message in
"exception", the traceback on stderr); anything else exits 1 with a
traceback. Run by tests/sdk.rs.
"""

import json
import sys
import traceback

from soniox import SonioxClient
from soniox.errors import SonioxRealtimeError
from soniox.types import RealtimeSTTConfig
from soniox.utils import start_audio_thread, throttle_audio

# 100 ms of 16 kHz mono pcm_s16le per message.
CHUNK_BYTES = 3200


def main() -> int:
    url, api_key, audio_file, sample_rate = sys.argv[1:5]
    client = SonioxClient(api_key=api_key, websocket_base_url=url)
    config = RealtimeSTTConfig(
        model="stt-rt-v6",
        audio_format="pcm_s16le",
        sample_rate=int(sample_rate),
        num_channels=1,
        endpoint_sensitivity=0.25,
        endpoint_latency_adjustment_level=1,
    )
    finals = []
    non_finals = 0
    errors = []
    finished = False
    exception = None
    try:
        with client.realtime.stt.connect(config=config) as session:
            # Sends the chunks, then the end of audio (send_bytes' finish=True).
            sender = start_audio_thread(
                session, throttle_audio(audio_file, chunk_size_bytes=CHUNK_BYTES)
            )
            for event in session.receive_events():
                if event.error_code is not None:
                    errors.append([event.error_code, event.error_message])
                for token in event.tokens:
                    if token.text.startswith("<"):
                        continue  # <fin>, <end>: markers, not speech
                    if token.is_final:
                        finals.append([token.text, token.start_ms])
                    else:
                        non_finals += 1
                finished = finished or event.finished
            sender.join(timeout=10)
    except SonioxRealtimeError as exc:
        traceback.print_exc()
        exception = str(exc)
    finally:
        client.close()
    print(
        json.dumps(
            {
                "finals": finals,
                "non_finals": non_finals,
                "errors": errors,
                "finished": finished,
                "exception": exception,
            }
        )
    )
    if exception is not None:
        return 3
    return 2 if errors else 0

if __name__ == "__main__":
    sys.exit(main())
