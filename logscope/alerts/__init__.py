"""Alerting: rules over the event stream, replayable on history, delivered by notifiers.

* :mod:`.rules` loads a TOML rules file (``default_rules.toml`` is the documented default);
* :mod:`.expr` is the expression language (pyparsing → polars expressions);
* :mod:`.engine` evaluates rules live (a ``tail`` sink) and replayed (``logscope alerts test``);
* :mod:`.notify` delivers: stdout/log, SMTP, webhook, Alertmanager, from background threads.

For ``tail``::

    engine = engine_from_file(path, log=log)    # or AlertEngine(load(path), ...)
    engine.watch_inputs(["/var/log/mail.log"])   # inputs expected to write (logging stopped)
    engine.add_batch(events, batch)              # per batch (or add(events) + lines_read(input, n))
    engine.tick()                                # on every wake-up; evaluates every eval_interval
    engine.reload()                              # SIGHUP
    engine.close()                               # deliver what is queued (5 s at most)
"""

from .engine import AlertEngine, engine_from_file
from .rules import RulesError, default_rules_path, load

__all__ = ["AlertEngine", "engine_from_file", "RulesError", "default_rules_path", "load"]
