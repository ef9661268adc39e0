"""SpeedUpNet (SUN, arXiv 2312.08887) on a CPU testbed, one concept per file.

    adapter.py     SUN attention processors for any diffusers UNet2DConditionModel; install,
                   remove, save/load of the adapter weights only (safetensors)
    testbed.py     synthetic attribute-captioned 16x16 images, the held-out split, text encoder
    teacher.py     the tiny UNet2DConditionModel teacher, DPM-Solver++ sampling, style fine-tune
    classifier.py  the evaluation-only attribute classifier and the Frechet distance
    distill.py     the training reconstruction: CFG distillation + multi-step consistency
    evaluate.py    held-out evaluation suites, the compared samplers, metrics
    config.py      SunConfig: the full (`make sun`) and quick sizes

The entry point is bench/sun.py. Background: SpeedUpNet, Chai et al., arXiv 2312.08887.
"""
