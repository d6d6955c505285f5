"""The pipeline definition: the model, its YAML loading and validation, its schema, the calendar
and the code versions derived from it. Pure: no client of any backend.
"""
