"""SpeedUpNet (SUN, arXiv 2312.08887) on a CPU testbed, one concept per file.

    adapter.py     SUN attention processors for any diffusers UNet2DConditionModel; install,
                   remove, save/load of the adapter weights only (safetensors)
    testbed.py     synthetic attribute-captioned 16x16 images, the held-out split, text encoder
    teacher.py     the tiny UNet2DConditionModel teacher, DPM-Solver++ sampling, style fine-tune
    classifier.py  the evaluation-only attribute classifier and the Frechet distance
    distill.py     the training reconstruction: CFG distillation + multi-step consistency
    evaluate.py    held-out evaluation suites, the compared samplers, metrics
    config.py      SunConfig: the full (`make sun`) and quick sizes
    optim.py       shared training helpers: cosine learning rate, clipped step, progress logs

SUN on VideoMAR's per-token diffusion head (sampler.head=dpm|sun, core/head_sampler.py):

    solver.py        DPM-Solver++ (ODE/SDE) over the head's schedule, the frozen head's CFG eps
    head_adapter.py  the SUN head adapter; install/remove, weights-only save/load
    head_distill.py  recording the teacher's conditions, CFG + MSC distillation of the adapter

The UNet testbed's entry point is bench/sun.py. Background: SpeedUpNet, Chai et al., arXiv
2312.08887; VideoMAR, arXiv 2506.14168.
"""
