"""Subcommands that live in their own modules.

Every module here defines ``add_parser(sub, common)``: it adds its subparser
to ``sub`` (``common`` adds the shared --config/--tz/... options) and sets
``func`` to a function ``args -> exit status``. ``logscope.cli`` finds them
all, so a new subcommand needs no edit elsewhere.
"""
