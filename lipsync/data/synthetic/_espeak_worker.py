"""Run one espeak-ng synthesis in a fresh process (standard library only; run as a script).

libespeak-ng keeps state between calls (the same text spoken twice in one process comes out a
few samples different), so ``speech.synthesize`` runs every utterance here, in a new process,
to make speech a pure function of its parameters.

Protocol: a JSON request on stdin ({"library", "voice", "text", "rate", "pitch", "range",
"word_gap"}); on success one JSON line ({"sample_rate", "events": [[type, sample, symbol]]})
followed by the raw little-endian int16 samples on stdout, exit 0.  On failure a JSON line
{"error": message} and exit 2.
"""

import ctypes
import ctypes.util
import json
import sys

EV_LIST_TERMINATED, EV_PHONEME = 0, 7
P_RATE, P_VOLUME, P_PITCH, P_RANGE, P_WORDGAP = 1, 2, 3, 4, 7
AUDIO_OUTPUT_SYNCHRONOUS, INIT_PHONEME_EVENTS, INIT_DONT_EXIT = 2, 0x0001, 0x8000
CHARS_UTF8, POS_CHARACTER = 1, 1


class Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class Event(ctypes.Structure):  # espeak_EVENT from speak_lib.h
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", Id),
    ]


CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(Event))


def fail(message):
    sys.stdout.write(json.dumps({"error": message}) + "\n")
    sys.stdout.flush()
    sys.exit(2)


def main():
    req = json.loads(sys.stdin.read())
    name = req.get("library") or ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        fail(
            f"espeak-ng library not found ({name}: {e}); install it "
            "(Debian/Ubuntu: apt-get install espeak-ng) to generate synthetic speech; "
            "inference never needs it"
        )
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None, INIT_PHONEME_EVENTS | INIT_DONT_EXIT)
    if rate <= 0:
        fail(f"espeak_Initialize failed (returned {rate}); is espeak-ng-data installed?")
    chunks, events = [], []

    def on_audio(wav, n, ev):
        if n > 0:
            chunks.append(ctypes.string_at(wav, 2 * n))
        i = 0
        while ev[i].type != EV_LIST_TERMINATED:
            e = ev[i]
            symbol = e.id.string.decode("utf-8", "replace") if e.type == EV_PHONEME else ""
            events.append([e.type, e.sample, symbol])
            i += 1
        return 0

    callback = CALLBACK(on_audio)
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(req["voice"].encode()) != 0:
        fail(f"espeak-ng has no voice {req['voice']!r}")
    for key, value in (
        (P_RATE, req["rate"]),
        (P_PITCH, req["pitch"]),
        (P_RANGE, req["range"]),
        (P_WORDGAP, req["word_gap"]),
        (P_VOLUME, 100),
    ):
        lib.espeak_SetParameter(key, int(value), 0)
    text = req["text"].encode("utf-8") + b"\0"
    err = lib.espeak_Synth(text, len(text), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
    if err != 0 or lib.espeak_Synchronize() != 0:
        fail(f"espeak-ng failed on {req['text']!r} (error {err})")
    sys.stdout.write(json.dumps({"sample_rate": rate, "events": events}) + "\n")
    sys.stdout.flush()
    for chunk in chunks:
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
