# Configuration of ELEKTRONN's MNIST example with a multi-layer perceptron (vect-scalar):
# the images are flattened to vectors of 784 values.
#
# Train with the training pipeline:  elektronn-train MNIST_MLP_config
#
# This file is executed as Python: every top-level name is an option (names starting with
# "_" and imported modules are ignored).
# MNIST is found by MNISTData: data_load_kwargs path, else $ELEKTRONN_MNIST, else the user
# data folder (~/.ELEKTRONN), where it is downloaded on first use; without network the message
# says where to put the files.

### Toolkit setup ###
save_path = "~/CNN_Training/2D/"

### Paths and general ###
save_name = "MNIST_MLP_example"  # ELEKTRONN 1.0 reused the CNN example's name (and folder)
save_path += save_name + "/"
param_file = None

### Network architecture ###  (the output layer with n_lab outputs is added automatically)
activation_func = "relu"
batch_size = 50
dropout_rates = None  # no dropout
MLP_layers = [300, 300]
target = "nll"

### Data ###
mode = "vect-scalar"
n_lab = None  # found from the data
background_processes = 3

data_class_name = "MNISTData"
data_load_kwargs = dict(path=None, convert2image=False, warp_on=True, shift_augment=True)
data_batch_kwargs = dict()

### Optimisation ###
n_steps = 100000
max_runtime = 30 * 60  # seconds
history_freq = [100]
monitor_batch_size = 10000
weight_decay = False
optimizer = "SGD"
LR_decay = 0.99
LR_schedule = None
SGD_params = dict(LR=0.02, momentum=0.9)
