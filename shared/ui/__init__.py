"""The status page (``cascade ui``): a read-only web view of a pipeline's state.

Local tooling only: the Cloud Functions never import this package (it needs Werkzeug and Jinja2,
which the deployed functions do not list). ``matrix`` builds the dates x processors matrix from
partition states already read, ``panels`` reads backfills, dead letters, rejected messages and
coverage, and ``server`` is the WSGI application with its templates and static files.
"""
