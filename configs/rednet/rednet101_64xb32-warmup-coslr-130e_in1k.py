_base_ = './rednet50_64xb32-warmup-coslr-130e_in1k.py'

custom_imports = dict(imports=['involution_mm'], allow_failed_imports=False)

model = dict(backbone=dict(depth=101))
