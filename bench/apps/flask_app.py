"""Flask hello world for bench/wsgi.sh (flask_app:app)."""

from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello():
    return "Hello, world!"
