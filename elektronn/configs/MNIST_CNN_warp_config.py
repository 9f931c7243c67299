# Configuration of ELEKTRONN's MNIST example: a 2-D CNN classifying images (img-scalar).
#
# Train with the training pipeline:  elektronn-train MNIST_CNN_warp_config
# (a bare name is also looked up among these example configs).
#
# This file is executed as Python: every top-level name is an option (names starting with
# "_" and imported modules are ignored). Sizes are given in (x, y) order.
# MNIST is found by MNISTData: data_load_kwargs path, else $ELEKTRONN_MNIST, else the user
# data folder (~/.ELEKTRONN), where it is downloaded on first use; without network the message
# says where to put the files.
#
# With warping, the validation error is good after 10-15 minutes. When it stops improving,
# turn warping off in the training console (data.warp_on = False), lower the learning rate
# (setlr 0.002) and train on: the test error reaches about 0.5 %.

### Toolkit setup ###
save_path = "~/CNN_Training/2D/"  # the run's folder is created in here

### Paths and general ###
save_name = "MNIST_example_warp"
save_path += save_name + "/"
param_file = None  # a parameter file to initialise the weights from

### Network architecture ###  (the output layer with n_lab outputs is added automatically)
activation_func = "relu"
batch_size = 50
dropout_rates = None  # no dropout
n_dim = 2
desired_input = 26  # the images are cropped to 26 x 26 (shift_augment)
filters = [3, 3]  # 26 -> 24 -> (pool) 12 -> 10 -> (pool) 5
pool = [2, 2]
nof_filters = [16, 32]
MLP_layers = [300, 300]
target = "nll"

### Data ###
mode = "img-scalar"
n_lab = None  # found from the data
background_processes = 3  # processes preparing (warping) batches

data_class_name = "MNISTData"  # a class of elektronn.training.traindata
data_load_kwargs = dict(path=None, convert2image=True, warp_on=True, shift_augment=True)
data_batch_kwargs = dict()  # batch_size is added by the trainer

### Optimisation ###
n_steps = 100000
max_runtime = 30 * 60  # seconds
history_freq = [100]  # monitor every 100 steps
monitor_batch_size = 10000
weight_decay = False
optimizer = "SGD"
LR_decay = 0.99  # per 1000 steps
LR_schedule = None
SGD_params = dict(LR=0.02, momentum=0.9)
