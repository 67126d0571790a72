"""
Talk to a trained adapter: an OpenAI-compatible HTTP server, and a web page it serves to upload or record clips.

    python serve.py --adapter=out/demo/adapter.safetensors        # then open http://127.0.0.1:8000
    python serve.py --adapter='' --port=8001                      # no adapter: the cascade (transcript only)

POST /v1/chat/completions takes OpenAI's chat format, with clips as `input_audio` content parts (base64 wav, flac, ogg
or mp3), as the official clients send them:

    {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "<base64>", "format": "wav"}},
                                                {"type": "text", "text": "What is the speaker's gender?"}]}]}

The reply is the next turn of the whole conversation: any user message may hold clips, and earlier answers stay in
the context. It also carries Whisper's transcript of each clip (`transcripts`); clips longer than 30 s are read in 30-s
windows, up to max_seconds. A conversation whose clips are all silence or steady noise (audio.holds_speech) is said to
hold no speech. Requests that arrive together are answered in one batch, up to batch_size. "stream": true gets
server-sent events in OpenAI's chunk format, the answer token by token.
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

from audio import AudioError, decode_audio
from common import answer_conversations, configure, die, load_answering_model, reply_so_far

# -----------------------------------------------------------------------------
adapter = 'out/adapter.safetensors'  # the trained adapter; '' = none: the LLM sees the transcript only
whisper = ''  # base models; '' = the ones the adapter was trained with (without an adapter: the offline defaults)
llm = ''
device = 'auto'  # 'auto' = cuda, then mps, then cpu
dtype = 'auto'  # the LLM's: 'auto' = common.generation_dtype
host = '127.0.0.1'  # 0.0.0.0 to serve other machines
port = 8000  # 0 = any free port (the line "serving on ..." names it)
batch_size = 8  # requests answered together
batch_wait = 0.02  # seconds to wait for more requests once one has arrived
max_new_tokens = 256  # the most a request may ask for (max_tokens); also its default
max_body_mb = 16.0  # larger requests are refused (413) unparsed
max_seconds = 120.0  # longer clips are refused (400); past 30 s, Whisper reads them in 30-s windows
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
    """The conversation (turns with their clips) and the decoding settings of a /v1/chat/completions body; BadRequest
    otherwise."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    messages = body.get('messages')
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    conversation = [parse_message(message, f"messages[{i}]") for i, message in enumerate(messages)]
    if not any(turn['audios'] for turn in conversation):
        raise BadRequest("no audio: put a clip in a user message as an input_audio content part")
    if conversation[-1]['role'] != 'user' or not (conversation[-1]['content'] or conversation[-1]['audios']):
        raise BadRequest("the last message must be the user's, with a text or a clip in it")
    return dict(conversation=conversation, **decoding_settings(body))


def parse_message(message, where):
    """One message as a turn: {"role", "content": its text parts joined, "audios": its clips (user messages only)}."""
    if not isinstance(message, dict) or message.get('role') not in ('system', 'user', 'assistant'):
        raise BadRequest(f"{where} must be an object with role system, user or assistant")
    content = message.get('content')
    parts = [{'type': 'text', 'text': content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise BadRequest(f"{where}.content must be a string or a list of content parts")
    texts, clips = [], []
    for j, part in enumerate(parts):
        kind = part.get('type') if isinstance(part, dict) else None
        if kind == 'text' and isinstance(part.get('text'), str):
            texts.append(part['text'].strip())
        elif kind == 'input_audio' and message['role'] == 'user':
            clips.append(parse_audio(part.get('input_audio'), f"{where}.content[{j}]"))
        else:
            raise BadRequest(f"{where}.content[{j}]: expected a text part (or an input_audio part in a user message), "
                             f"got {str(part)[:80]}")
    return dict(role=message['role'], content=' '.join(t for t in texts if t), audios=clips)


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
        return decode_audio(data, where, max_seconds)
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
    """Fills each job's answer and transcripts; jobs with the same decoding settings share a batch. A streaming job
    gets its answer so far in its 'partial' queue as it grows."""
    groups = {}
    for job in jobs:
        groups.setdefault((job['max_new_tokens'], job['temperature'], job['top_p']), []).append(job)
    for (n_tokens, temperature, top_p), group in groups.items():
        def on_token(i, ids, group=group):
            if group[i]['stream']:
                group[i]['partial'].put(reply_so_far(model.tokenizer, ids))
        answers, transcripts = answer_conversations(model, [j['conversation'] for j in group], use_adapter=bool(adapter),
                                                    max_new_tokens=n_tokens, temperature=temperature, top_p=top_p,
                                                    on_token=on_token)
        for job, answer, clip_transcripts in zip(group, answers, transcripts):
            job.update(answer=answer, transcripts=clip_transcripts)


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
            job['partial'].put(None)  # the end of a stream
            job['done'].set()


# --- HTTP ---

def completion(job):
    """The reply in OpenAI's format, with the clips' transcripts."""
    return dict(id=job['id'], created=int(job['created']), model=model_name, object='chat.completion',
                transcripts=job['transcripts'], usage=dict(prompt_tokens=0, completion_tokens=0, total_tokens=0),
                choices=[dict(index=0, message=dict(role='assistant', content=job['answer']), finish_reason='stop')])


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
        job.update(id=f"chatcmpl-{uuid.uuid4().hex}", created=time.time(), done=threading.Event(), partial=queue.Queue())
        pending.put(job)
        if job['stream']:
            try:
                return self.stream(job)
            except (BrokenPipeError, ConnectionResetError):  # the client left; its answer is still made, and dropped
                return
        job['done'].wait()
        if 'error' in job:
            return self.send_error_json(500, f"the model failed on this batch: {job['error']}")
        self.send_json(200, completion(job))

    def stream(self, job):
        """Server-sent events in OpenAI's chunk format: the answer as it grows, then the transcripts and the end (or an
        error event, should the model fail once the stream has begun)."""
        self.send_response(200)
        self.send_header('Content-Type', 'text/event-stream')
        self.send_header('Connection', 'close')  # the stream ends with the connection: there is no length to give
        self.end_headers()
        self.close_connection = True
        chunk = dict(id=job['id'], created=int(job['created']), model=model_name, object='chat.completion.chunk')

        def send_event(delta, finish_reason=None, **extra):
            choice = dict(index=0, delta=delta, finish_reason=finish_reason)
            self.wfile.write(f"data: {json.dumps(dict(chunk, choices=[choice], **extra))}\n\n".encode())
            self.wfile.flush()

        send_event(dict(role='assistant', content=''))
        shown = ''
        while (text := job['partial'].get()) is not None:
            if text.startswith(shown) and len(text) > len(shown):
                send_event(dict(content=text[len(shown):]))
                shown = text
        if 'error' in job:
            message = f"the model failed on this batch: {job['error']}"
            self.wfile.write(f"data: {json.dumps(dict(error=dict(message=message, type='server_error')))}\n\n".encode())
        else:
            rest = job['answer'][len(shown):] if job['answer'].startswith(shown) else ''
            send_event(dict(content=rest), 'stop', transcripts=job['transcripts'])
        self.wfile.write(b"data: [DONE]\n\n")

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
