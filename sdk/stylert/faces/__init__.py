"""Whole photos around the networks: face detection (MTCNN, shipped), FFHQ alignment, the
detect -> align -> network -> paste-back pipeline every face call shares, and image file I/O."""
