"""The calls on Ray (`pip install 'stylert[serve]'`): `stylert serve` (Ray Serve, `service.py`),
`stylert batch` (Ray Data, `batchjob.py`), starting or joining Ray (`cluster.py`), and the calls'
controls parsed from text (`controls.py`). Only `service.py`, `batchjob.py` and `cluster.py` import Ray."""
