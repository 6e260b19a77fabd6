import numpy as np
import pytest

from tests.shared_data import WEIGHTS

pytest.importorskip("tensorflow", reason="the train extra (tensorflow-cpu) is not installed")
if not (WEIGHTS / "tf2_mobilenet_v2_1.0_224_ptq.tflite").is_file():
    pytest.skip(f"ImageNet checkpoint not present at {WEIGHTS} (CI always has ../shared)", allow_module_level=True)


def test_dequantized_backbone_recognises_the_cat():
    import cv2
    import keras

    from trainer.weights import imagenet_labels, load_imagenet_tflite

    model = keras.applications.MobileNetV2(weights=None, include_top=True)
    assert load_imagenet_tflite(model, include_top=True) == 53
    labels = imagenet_labels()
    rgb = cv2.cvtColor(cv2.imread(str(WEIGHTS / "cat.bmp")), cv2.COLOR_BGR2RGB)
    x = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1.0
    probs = model.predict(x[None], verbose=0)[0]
    top5 = [labels[i] for i in np.argsort(-probs)[:5]]
    assert "cat" in top5[0], top5
    assert probs.max() > 0.3


def test_random_init_does_not_recognise_the_cat():
    # Guards the test above against a model that calls everything a cat.
    import cv2
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, include_top=True)
    rgb = cv2.cvtColor(cv2.imread(str(WEIGHTS / "cat.bmp")), cv2.COLOR_BGR2RGB)
    x = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1.0
    probs = model.predict(x[None], verbose=0)[0]
    assert probs.max() < 0.05
