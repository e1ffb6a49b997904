"""Training and test data for the lip-sync models.

``lipsync.data.synthetic`` makes talking-face clips with known ground truth;
``lipsync.data.sync_measure`` scores mouth motion against that ground truth.
"""
