"""
Talk to a trained adapter: an OpenAI-compatible HTTP server, and a web page it serves to upload or record a clip.

    python serve.py --adapter=out/demo/adapter.safetensors        # then open http://127.0.0.1:8000
    python serve.py --adapter='' --port=8001                      # no adapter: the cascade (transcript only)

POST /v1/chat/completions takes OpenAI's chat format, with the clip as an `input_audio` content part (base64 wav,
flac, ogg or mp3), as the official clients send it:

    {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "<base64>", "format": "wav"}},
                                                {"type": "text", "text": "What is the speaker's gender?"}]}]}

The answer is about the conversation's clip and its last user text; the reply also carries Whisper's transcript of
the clip (`transcripts`). A clip of silence or steady noise (audio.holds_speech) is said to hold no speech. Requests
that arrive together are answered in one batch, up to batch_size. "stream": true gets server-sent events in OpenAI's
chunk format; the answer comes as one chunk when its batch is done.
Bad requests get a 4xx with a message saying what is wrong, and the server goes on.
"""
import base64
import binascii
import json
import os
import queue
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from audio import MAX_SECONDS, NO_SPEECH, AudioError, decode_audio, holds_speech
from common import configure, die, load_answering_model

# -----------------------------------------------------------------------------
adapter = 'out/adapter.safetensors'  # the trained adapter; '' = none: the LLM sees the transcript only
whisper = ''  # base models; '' = the ones the adapter was trained with (without an adapter: the offline defaults)
llm = ''
device = 'auto'  # 'auto' = cuda, then mps, then cpu
dtype = 'auto'  # the LLM's: 'auto' = model.generation_dtype
host = '127.0.0.1'  # 0.0.0.0 to serve other machines
port = 8000  # 0 = any free port (the line "serving on ..." names it)
batch_size = 8  # requests answered together
batch_wait = 0.02  # seconds to wait for more requests once one has arrived
max_new_tokens = 256  # the most a request may ask for (max_tokens); also its default
max_body_mb = 16.0  # larger requests are refused (413) unparsed
seed = 1337
configure(globals())
# -----------------------------------------------------------------------------
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'serve.html')
AUDIO_FORMATS = ('wav', 'flac', 'ogg', 'mp3')


class BadRequest(Exception):
    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def parse_request(body):
    """The clip, the question and the decoding settings of a /v1/chat/completions body; BadRequest otherwise."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    messages = body.get('messages')
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    clips, question = [], None
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get('role') not in ('system', 'user', 'assistant'):
            raise BadRequest(f"messages[{i}] must be an object with role system, user or assistant")
        content = message.get('content')
        parts = [{'type': 'text', 'text': content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise BadRequest(f"messages[{i}].content must be a string or a list of content parts")
        texts = []
        for j, part in enumerate(parts):
            where = f"messages[{i}].content[{j}]"
            kind = part.get('type') if isinstance(part, dict) else None
            if kind == 'text' and isinstance(part.get('text'), str):
                texts.append(part['text'])
            elif kind == 'input_audio' and message['role'] == 'user':
                clips.append(parse_audio(part.get('input_audio'), where))
            else:
                raise BadRequest(f"{where}: expected a text part (or an input_audio part in a user message), got {str(part)[:80]}")
        if message['role'] == 'user' and ''.join(texts).strip():
            question = ' '.join(t.strip() for t in texts if t.strip())
    if not clips:
        raise BadRequest("no audio: put the clip in a user message as an input_audio content part")
    if len(clips) > 1:
        raise BadRequest(f"one clip per conversation for now, got {len(clips)}")
    if question is None:
        raise BadRequest("no question: a user message needs a text part")
    return dict(audio=clips[0], question=question, **decoding_settings(body))


def parse_audio(part, where):
    if not isinstance(part, dict) or not isinstance(part.get('data'), str):
        raise BadRequest(f"{where}.input_audio must be an object with the base64 'data' of the file and its 'format'")
    if part.get('format', 'wav') not in AUDIO_FORMATS:
        raise BadRequest(f"{where}.input_audio.format must be one of {', '.join(AUDIO_FORMATS)}, got {part.get('format')!r}")
    try:
        data = base64.b64decode(part['data'], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}.input_audio.data is not base64") from None
    try:
        return decode_audio(data, where, MAX_SECONDS)
    except AudioError as e:
        raise BadRequest(str(e)) from None


def decoding_settings(body):
    n_tokens = body.get('max_completion_tokens', body.get('max_tokens')) or max_new_tokens
    temperature = body.get('temperature', 0.0)
    top_p = body.get('top_p', 1.0)
    if not isinstance(n_tokens, int) or not 1 <= n_tokens <= max_new_tokens:
        raise BadRequest(f"max_tokens must be an integer from 1 to {max_new_tokens}, got {n_tokens!r}")
    if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise BadRequest(f"temperature must be a number from 0 to 2, got {temperature!r}")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise BadRequest(f"top_p must be a number in (0, 1], got {top_p!r}")
    if body.get('n', 1) != 1:
        raise BadRequest("n must be 1")
    return dict(max_new_tokens=n_tokens, temperature=float(temperature), top_p=float(top_p),
                stream=bool(body.get('stream', False)))


# --- the model, answered from one thread: requests that arrive together share a batch ---

def answer_requests(jobs):
    """Fills each job's answer and transcript; jobs with the same decoding settings share a generate call."""
    groups = {}
    for job in jobs:
        if not holds_speech(job['audio']):  # described, silence or steady noise would get a voice it does not have
            job.update(answer=NO_SPEECH, transcript='')
        else:
            groups.setdefault((job['max_new_tokens'], job['temperature'], job['top_p']), []).append(job)
    for (n_tokens, temperature, top_p), group in groups.items():
        answers, transcripts = model.generate([j['audio'] for j in group], [j['question'] for j in group],
                                              max_new_tokens=n_tokens, temperature=temperature, top_p=top_p,
                                              use_adapter=bool(adapter))
        for job, answer, transcript in zip(group, answers, transcripts):
            job.update(answer=answer, transcript=transcript)


def model_loop():
    while True:
        jobs = [pending.get()]
        deadline = time.monotonic() + batch_wait
        while len(jobs) < batch_size and (wait := deadline - time.monotonic()) > 0:
            try:
                jobs.append(pending.get(timeout=wait))
            except queue.Empty:
                break
        stats['batches'] += 1
        stats['requests'] += len(jobs)
        try:
            answer_requests(jobs)
        except Exception as e:  # a failure answers these requests with a 500 and leaves the server up
            print(f"error: answering {len(jobs)} request(s): {e!r}", file=sys.stderr)
            for job in jobs:
                job['error'] = repr(e)
        for job in jobs:
            job['done'].set()


# --- HTTP ---

def completion(job, stream):
    """The reply in OpenAI's format: a chat.completion, or the chunks of a stream."""
    common = dict(id=job['id'], created=int(job['created']), model=model_name)
    if not stream:
        return dict(common, object='chat.completion', transcripts=[job['transcript']],
                    choices=[dict(index=0, message=dict(role='assistant', content=job['answer']), finish_reason='stop')],
                    usage=dict(prompt_tokens=0, completion_tokens=0, total_tokens=0))
    chunk = dict(common, object='chat.completion.chunk')
    return [dict(chunk, choices=[dict(index=0, delta=dict(role='assistant', content=''), finish_reason=None)]),
            dict(chunk, transcripts=[job['transcript']],
                 choices=[dict(index=0, delta=dict(content=job['answer']), finish_reason=None)]),
            dict(chunk, choices=[dict(index=0, delta={}, finish_reason='stop')])]


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def do_GET(self):
        if self.path in ('/', '/index.html'):
            with open(PAGE, 'rb') as f:
                self.send(200, f.read(), 'text/html; charset=utf-8')
        elif self.path == '/v1/models':
            self.send_json(200, dict(object='list', data=[dict(id=model_name, object='model', owned_by='nanodesta')]))
        elif self.path == '/health':
            self.send_json(200, dict(status='ok', **stats))
        else:
            self.send_error_json(404, f"no such path: {self.path}")

    def do_POST(self):
        if self.path != '/v1/chat/completions':
            return self.send_error_json(404, f"no such path: {self.path} (POST /v1/chat/completions)")
        size = int(self.headers.get('Content-Length') or 0)
        if size > max_body_mb * 2**20:
            for start in range(0, size, 2**20):  # read and dropped, so that the client, still sending, gets the answer
                self.rfile.read(min(2**20, size - start))
            return self.send_error_json(413, f"request of {size / 2**20:.1f} MB is larger than {max_body_mb:g} MB")
        try:
            try:
                body = json.loads(self.rfile.read(size))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise BadRequest(f"the body is not JSON ({e})") from None
            job = parse_request(body)
        except BadRequest as e:
            return self.send_error_json(e.status, str(e))
        job.update(id=f"chatcmpl-{uuid.uuid4().hex}", created=time.time(), done=threading.Event())
        pending.put(job)
        job['done'].wait()
        if 'error' in job:
            return self.send_error_json(500, f"the model failed on this batch: {job['error']}")
        if not job['stream']:
            return self.send_json(200, completion(job, stream=False))
        events = ''.join(f"data: {json.dumps(c)}\n\n" for c in completion(job, stream=True)) + "data: [DONE]\n\n"
        self.send(200, events.encode(), 'text/event-stream')

    def send(self, status, data, content_type):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, status, obj):
        self.send(status, json.dumps(obj).encode(), 'application/json')

    def send_error_json(self, status, message):
        kind = 'invalid_request_error' if status < 500 else 'server_error'
        self.send_json(status, dict(error=dict(message=message, type=kind, param=None, code=None)))

    def log_message(self, format, *args):  # one line per request on stderr, as http.server does, without the date
        print(f"{self.address_string()} {format % args}", file=sys.stderr)


if __name__ == '__main__':
    if adapter and not os.path.isfile(adapter):
        die(f"{adapter}: no such adapter file (train one with train.py, or pass --adapter='' for none)")
    model, device, dtype = load_answering_model(adapter, whisper, llm, device, dtype, seed)
    model_name = f"nanodesta:{os.path.basename(adapter) or 'cascade'}"
    pending, stats = queue.Queue(), dict(batches=0, requests=0)
    threading.Thread(target=model_loop, daemon=True).start()
    server = ThreadingHTTPServer((host, port), Handler)
    print(f"serving on http://{host}:{server.server_port} ({model_name}, {device}, {dtype})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
