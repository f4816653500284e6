"""kexa.serve: the OpenAI-compatible HTTP server (`kexa serve`) over the continuous-batching scheduler.

    from kexa.serve import create_app
    app = create_app(Scheduler(engine).start(), tokenizer, "kexa")   # then uvicorn.run(app)
"""

from .app import create_app

__all__ = ["create_app"]
