# Template of a configuration with every option and its default value.
#
# Copy it to ~/.elektronn.config to change the defaults of all trainings, or to a new file
# to configure one training (elektronn-train <file>); options a file leaves out keep their
# defaults. The file is executed as Python: every top-level name is an option (names
# starting with "_" and imported modules are ignored). Sizes are given in (x, y) or (x, y, z)
# order.

### Toolkit setup ###
# folder of the training run (default: ~/CNN_Training/<save_name>/)
save_path = '~/CNN_Training/3D/'
# plot the training progress
plot_on = True
# log the training status
print_status = True
# GPU of ELEKTRONN 1.0 (False: the backend's default); see Config's gpu
device = False
# hours between permanent parameter snapshots
param_save_h = 1.0
# hours until the first preview
initial_prev_h = 1.0
# hours between previews
prev_save_h = 3.0

### Paths and general ###
# name of the model (and of its folder)
save_name = 'Debug'
save_path += save_name + '/'  # the run's folder
# delete an existing save_path folder
overwrite = True
# parameter file to initialise the net from
param_file = None
# seed of the net, the batches and the batch workers (None: fresh entropy)
seed = None

### Network architecture ###
# one for all layers or one per layer
activation_func = 'relu'
# examples per update step
batch_size = 1
# drop rate per layer, one for all, or [] (no dropout)
dropout_rates = []
# 2 or 3 (ignored for 'vect-scalar')
n_dim = 2
# input size, (x, y) or (x, y, z)
desired_input = 100
# filter size per conv layer, (x, y) or (x, y, z)
filters = []
# pooling factor per conv layer, (x, y) or (x, y, z)
pool = []
# number of filters per conv layer
nof_filters = []
# 'max' or 'maxabs', for all or per layer
pooling_mode = 'max'
# max-fragment-pooling per conv layer, or for all (True/False)
MFP = []
# keyword arguments of addRecurrentLayer, or None
rnn_layer_kwargs = None
# number of neurons per perceptron layer
MLP_layers = []
# loss: nll, regression, nll_mutiple_binary, nll_weak, affinity or malis
target = 'nll'

### Image data (CNN) ###
# folder of the data files
data_path = '/'
# folder of the label files
label_path = '/'
# (h5 file name, dataset name) per data cube
d_files = []
# (h5 file name, dataset name) per label cube
l_files = []
# sampling priority per cube (None: by cube size)
cube_prios = None
# indices of the cubes used for validation
valid_cubes = []
# drop patches with a larger fraction of negative (unlabelled) labels
example_ignore_threshold = 0.0
# channels with grey-value augmentation
grey_augment_channels = [0]
# weight the examples
use_example_weights = False
# random flips and rotations
flip_data = True
# cut 2-D slices only along z
anisotropic_data = True
# train with lazy labels
lazy_labels = False
# warping augmentation (a float: fraction)
warp_on = False
# img-scalar: crop, keep, 0-pad, mirror or reject
border_mode = 'crop'
# 'standardise' or None
pre_process = None
# data stored as (z, (ch,) x, y)
zchxy_order = False
# mirror only horizontally
upright_x = False
# downsample x and y by this factor
downsample_xy = False

### Preview ###
# h5 file with preview cubes
preview_data_path = None
# keyword arguments of Trainer.previewSlice
preview_kwargs = {'export_class': 1, 'max_z_pred': 5}

### Data common ###
# img-img, img-scalar or vect-scalar
mode = 'img-img'
# number of classes (None: detect, slow)
n_lab = None
# batch pre-fetching processes (True: 2)
background_processes = False

### Alternative data ###
# a class of elektronn.training.traindata, or (file path, class name)
data_class_name = None
# keyword arguments of the data class
data_load_kwargs = {}
# keyword arguments of its getbatch
data_batch_kwargs = {}

### Optimisation ###
# number of update steps
n_steps = 10**12
# maximal training time in seconds
max_runtime = 24 * 3600
# [steps between monitoring]
history_freq = [500]
# examples to monitor the model on
monitor_batch_size = 10
# L2 weight decay (False: 0)
weight_decay = False
# weight per class (not normalised)
class_weights = None
# label propagation threshold
label_prop_thresh = None
# SGD, CG, RPROP, LBFGS or Adam
optimizer = 'SGD'
# learning rate factor per 1000 steps
LR_decay = 0.993
# [(step, learning rate), ...]
LR_schedule = None

### Optimiser parameters ###
# SGD
SGD_params = {'LR': 0.001, 'momentum': 0.9}
# unused (kept for old config files)
SSGD_params = {'LR': 0.01, 'momentum': 0.9, 'var_momentum': 0.9, 'var_cuttoff': 3.0}
# RPROP
RPROP_params = {'penalty': 0.35, 'gain': 0.2, 'beta': 0.7, 'initial_update_size': 0.0001}
# Adam
Adam_params = {'LR': 0.001, 'beta1': 0.9, 'beta2': 0.999, 'epsilon': 1e-08}
# conjugate gradient
CG_params = {'n_steps': 4, 'alpha': 0.35, 'beta': 0.75, 'max_step': 0.02, 'min_step': 8e-05}
# L-BFGS
LBFGS_params = {'maxfun': 40, 'maxiter': 4, 'm': 10, 'factr': 100.0, 'pgtol': 1e-09, 'iprint': -1}
