"""``byoc invoke`` and ``byoc explain``: one image against a deployed model."""

from __future__ import annotations

import json
from pathlib import Path

from byoc.cli.common import add_command
from byoc.console import console
from container_serve import content_types as ct


def _image_options(p) -> None:
    p.add_argument("image", help="image file")
    p.add_argument("--target-model", help="model name (as deployed); omit for a single-model endpoint")
    p.add_argument("--content-type", help="default: from the file extension (image/jpeg, image/png, ...)")
    p.add_argument("--url", help="local endpoint URL (default: from RUN_DIR/endpoint.json)")


def register(sub, common) -> None:
    p = add_command(sub, "invoke", common, "classify one image with a target model",
                    """
                    Send one image to the endpoint (locally POST /models/NAME/invoke, on SageMaker
                    InvokeEndpoint with TargetModel). The answer is the top-k labels with probabilities.
                    """,
                    """
                    byoc invoke shirt.jpg --target-model fashion --topk 3
                    byoc invoke shirt.png --target-model fashion --accept text/csv
                    byoc invoke dog.jpg --target-model dogs --backend sagemaker
                    """)
    _image_options(p)
    p.add_argument("--accept", default=ct.JSON, help="application/json (default) or text/csv")
    p.add_argument("--topk", type=int, help="number of classes in the answer")
    p.add_argument("--explain", action="store_true", help="also return a Grad-CAM heatmap (base64 PNG)")
    p.set_defaults(run=run_invoke)

    p = add_command(sub, "explain", common, "write a Grad-CAM heatmap PNG for one image",
                    """
                    Ask the endpoint for a Grad-CAM explanation of the top class (custom attribute
                    explain=gradcam) and write the heatmap overlay as a PNG file.
                    """,
                    """
                    byoc explain shirt.jpg --target-model fashion -o shirt-gradcam.png
                    """)
    _image_options(p)
    p.add_argument("-o", "--output", help="PNG path (default: <image>.gradcam.png)")
    p.set_defaults(run=run_explain)


def run_invoke(args, backend) -> int:
    answer = backend.invoke(args.image, args.target_model, args.content_type, args.accept,
                            args.topk, args.explain, url=args.url)
    if not answer.sent:         # a dry run printed the request it did not send
        return 0
    if answer.content_type.startswith(ct.JSON) and answer.body:
        print(json.dumps(json.loads(answer.body), indent=1))   # plain JSON: pipe it into jq or a file
    elif answer.body:
        print(answer.body.decode(errors="replace"))
    return 0


def run_explain(args, backend) -> int:
    out = args.output or str(Path(args.image).with_suffix("")) + ".gradcam.png"
    prediction = backend.explain(args.image, args.target_model, args.content_type, out, url=args.url)
    if prediction.dry_run:
        console.print(f"dry run: nothing sent, {out} not written")
    else:
        console.print(f"[green]Grad-CAM[/] for {prediction.label!r} written to {out}")
    return 0
