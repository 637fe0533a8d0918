"""The parts of batch validation, one job per module (the step itself is :mod:`mlops.validate`):

- :mod:`~mlops.validation.findings`: the results of the checks of one run
- :mod:`~mlops.validation.sniff`: reading the file: bytes, format, header, CSV structure, parsing
- :mod:`~mlops.validation.calendar`: batch names as ISO weeks and their days
- :mod:`~mlops.validation.checks`: schema, temporal, quality, anomalies, row key, label, volume
  and distribution checks
- :mod:`~mlops.validation.driftstats`: the distribution statistics (Evidently's default tests)
- :mod:`~mlops.validation.accepted_index`: row keys and label/volume figures of accepted batches
- :mod:`~mlops.validation.report`: the JSON report (latest truth plus history) and its HTML page
"""
