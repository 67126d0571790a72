"""
Poor man's configurator, in the nanoGPT manner. A script defines its config as plain module-level
globals, then runs

    exec(open('configurator.py').read())

which applies, in order, every `config/<name>.py` file named on the command line (plain Python
assignments) and every `--key=value` override (a bare `--flag` sets a boolean to True). An override must name an existing global, and its value
is parsed as a Python literal when possible and must keep the type of the default (so a typo or
`--lr=abc` fails loudly instead of silently doing something else).
"""
import sys
from ast import literal_eval


def _fail(message):  # a bad command line is bad input: one line on stderr, exit code 2
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


for arg in sys.argv[1:]:
    if not arg.startswith('--'):
        # a config file: plain assignments executed into this script's globals
        if not arg.endswith('.py'):
            _fail(f"'{arg}' is neither a config file (config/<name>.py) nor a --key=value override")
        try:
            with open(arg) as f:
                config_source = f.read()
        except OSError as e:
            _fail(f"cannot read config file {arg}: {e.strerror}")
        print(f"overriding config with {arg}")
        exec(config_source)
    else:
        if '=' not in arg and isinstance(globals().get(arg[2:]), bool):
            arg += '=True'  # a bare --flag switches a boolean on
        if '=' not in arg:
            _fail(f"override '{arg}' must look like --key=value")
        key, val = arg[2:].split('=', 1)
        if key not in globals():
            _fail(f"unknown config key '{key}' (from '{arg}')")
        try:
            attempt = literal_eval(val)  # numbers, booleans, lists, quoted strings
        except (SyntaxError, ValueError):
            attempt = val  # a bare string such as --device=cuda
        default = globals()[key]
        if default is not None and not isinstance(attempt, type(default)):
            if isinstance(default, float) and isinstance(attempt, int):
                attempt = float(attempt)  # --lr=1 is a fine float
            elif isinstance(default, str):
                attempt = val  # --out_dir=123 is still a path
            else:
                _fail(f"--{key} expects a {type(default).__name__} like {default!r}, got {val!r}")
        print(f"overriding: {key} = {attempt!r}")
        globals()[key] = attempt
