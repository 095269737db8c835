"""The calls on Ray (`pip install 'stylert[serve]'`): `stylert serve` (Ray Serve, `service.py`),
`stylert batch` (Ray Data, `batchjob.py`) and starting or joining Ray (`cluster.py`); the calls and their
controls come from `calls.registry`. Only these modules import Ray."""
