"""One training step of the quick-start model on one augmented digits batch with 1 and with 2 threads."""
import torch
from dia_ode import create_model
from dia_ode.data import load_dataset
from dia_ode.tasks import get_task

data = load_dataset("digits")
task = get_task("classification")
x, y = next(iter(task.batches(data.train, 128, dataset=data, device=torch.device("cpu"), shuffle=True,
                              generator=torch.Generator().manual_seed(0), augment=True)))
out = {}
for threads in (1, 2):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model("dia_resnet20", num_classes=10, in_channels=1)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    out[threads] = (loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()]))
(l1, g1), (l2, g2) = out[1], out[2]
print(f"loss 1 thread {l1:.9f}, 2 threads {l2:.9f}, |diff| {abs(l1 - l2):.2e}")
print(f"gradient: max |diff| {(g1 - g2).abs().max():.2e}, relative norm {(g1 - g2).norm() / g1.norm():.2e}")
