"""The code of the logged MLflow model (models-from-code): MLflow runs this file when it
loads the model; the weights come from the ``checkpoint`` artifact."""

from mlflow.models import set_model

from multitask_cnn.serving import MultiTaskPyfunc

set_model(MultiTaskPyfunc())
