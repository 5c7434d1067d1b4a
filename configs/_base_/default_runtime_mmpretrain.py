# mmpretrain's default runtime, with what runs of several processes (GPUs, machines, or CPU processes) need.
_base_ = 'mmpretrain::_base_/default_runtime.py'

# Every process keeps its own BN statistics (DDP does not broadcast buffers); averaging them after each
# training iteration makes the checkpoints and the validation of every process use the same statistics, so
# the validation metrics logged during training equal a test of the saved checkpoint. A config that sets its
# own custom_hooks replaces this list: keep this hook in it.
custom_hooks = [dict(type='SyncBuffersEveryIterHook')]

# How long a process waits in a collective operation (for a process that stopped, or a machine that never
# joined) before the run fails: 30 minutes, torch's default. A process that dies makes the launcher stop
# the others on its machine at once; this timeout is for what the launcher cannot see, such as another
# machine. Shorten it with --cfg-options env_cfg.dist_cfg.timeout=SECONDS (seconds).
env_cfg = dict(dist_cfg=dict(timeout=1800))
