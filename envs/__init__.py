"""slimdrive's environments: the Gymnasium `DrivingEnv` (`slimdrive/Drive-v0`), camera rigs, the compute
budget, and the embedded CARLA-compatible simulator (`envs.server`) with its maps (`envs.maps`)."""
import gymnasium

gymnasium.register(id="slimdrive/Drive-v0", entry_point="envs.driving_env:DrivingEnv")
