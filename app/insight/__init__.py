"""Customer insight (issue #4): the lead intent score (线索浓度矩阵, ``intent``) and tracked links
(``links``, served as ``/r/<token>`` by ``views``)."""
