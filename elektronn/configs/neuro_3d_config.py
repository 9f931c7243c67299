# Configuration of ELEKTRONN's 3-D example: an anisotropic 3-D CNN that detects cell
# membranes ("barriers") in electron microscopy volumes (img-img).
#
# Train with the training pipeline:  elektronn-train neuro_3d_config
#
# This file is executed as Python: every top-level name is an option (names starting with
# "_" and imported modules are ignored). Sizes are given in (x, y, z) order; the
# configuration converts them to the (z, x, y) order the net uses.
#
# Data: two cubes in data_path, raw_<i>.h5 (dataset "raw", uint8, (x, y, z)) and
# barrier_int16_<i>.h5 (dataset "lab", int16, (x, y, z), 1 = membrane), the layout of
# ELEKTRONN 1.0's neuro_data.zip. The default data_path is where elektronn-demo writes its
# synthetic cubes (relative to the working directory); the same cubes, without the demo, come from
#
#   python -m elektronn.data.synthetic elektronn-demo-output/data
#
# For your own volumes write them in this layout and set data_path/label_path (here or with
# elektronn-train --set data_path=...). Each cube must be at least 127 x 127 x 7 voxels (the
# input size below).

### Toolkit setup ###
save_path = "~/CNN_Training/3D/"
plot_on = True
print_status = True
device = False
param_save_h = 1.0  # hours between parameter snapshots
initial_prev_h = 0.1  # hours until the first preview
prev_save_h = 0.2  # hours between previews

### Paths and general ###
save_name = "neuro_3d"
overwrite = True
save_path += save_name + "/"
param_file = None

### Network architecture ###  (the output layer with n_lab outputs is added automatically)
activation_func = "relu"
batch_size = 1
dropout_rates = []  # no dropout
n_dim = 3
desired_input = [127, 127, 7]  # (x, y, z)
filters = [[4, 4, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [2, 2, 1]]
pool = [[2, 2, 1], [2, 2, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]]
nof_filters = [10, 25, 40, 50, 60]
pooling_mode = "max"
MFP = []  # no max-fragment-pooling in training
target = "nll"

### Data ###
mode = "img-img"
n_lab = 2
background_processes = 2

data_path = "elektronn-demo-output/data/"
label_path = "elektronn-demo-output/data/"
d_files = [(f"raw_{i}.h5", "raw") for i in range(2)]
l_files = [(f"barrier_int16_{i}.h5", "lab") for i in range(2)]
cube_prios = None  # sample cubes in proportion to their size
valid_cubes = [1]  # cube 1 is for validation
example_ignore_threshold = 0.0
grey_augment_channels = [0]
use_example_weights = False
flip_data = True
anisotropic_data = True
warp_on = 0.7  # warp 70 % of the patches

### Preview ###
# An h5 file with cubes ((ch,) x, y, z) of grey values 0..255 to predict while training
# (ELEKTRONN 1.0 shipped preview_cubes.h5 with its data); None: no previews.
preview_data_path = None
preview_kwargs = dict(export_class=1, max_z_pred=5)

### Optimisation ###
n_steps = 10**12
max_runtime = 2 * 3600  # seconds
history_freq = [500]
monitor_batch_size = 10
weight_decay = 0.0001
class_weights = None
label_prop_thresh = None
optimizer = "SGD"
LR_decay = 0.993
LR_schedule = None
SGD_params = dict(LR=0.005, momentum=0.9)
