#!/usr/bin/env bash
# Build the training and serving images and push them to Amazon ECR from a workstation.
# (CodeBuild does the same through buildspec.yml.)
#
# Usage: scripts/build_and_push.sh [options]
#   --region REGION         AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION or the CLI profile's)
#   --account ID            AWS account id (default: the caller's, from `aws sts get-caller-identity`)
#   --train-repo NAME       ECR repository of the training image (default: byoc-train)
#   --serve-repo NAME       ECR repository of the serving image  (default: byoc-serve)
#   --tag TAG               image tag besides `latest` (default: the git commit, short)
#   --train-torch-index-url URL  index for the training image's torch (default: the Dockerfile's,
#                           CUDA 12.6; '' = PyPI, whose torch is the CUDA 13 build)
#   --serve-torch-index-url URL  index for the serving image's torch (default: the Dockerfile's,
#                           CPU-only; '' = PyPI)
#   --base-image IMAGE      base image of both Dockerfiles (default: python:3.11-slim-bookworm)
#   --output FILE           where to write the pushed image URIs as JSON (default: image-uris.json)
#   -h, --help              show this help
#
# Needs: docker (with a running engine), the AWS CLI and credentials allowed to use ECR.
#
# Images are built for linux/amd64 whatever this machine is (an Apple-silicon laptop builds arm64
# otherwise, which ml.* instances cannot run). The registry is <account>.dkr.ecr.<region>.<domain>,
# amazonaws.com.cn in the China regions. Tests only: REGISTRY_OVERRIDE=127.0.0.1:PORT pushes to that
# registry instead (the ECR calls still go to the AWS endpoint, e.g. AWS_ENDPOINT_URL=moto).
# Written for bash 3.2 (macOS's /bin/bash) as well: arrays that may be empty are expanded guarded.
set -euo pipefail

usage() { sed -n '2,/^# Needs:/s/^# \{0,1\}//p' "$0"; }
die() { printf 'build_and_push: error: %s\n' "$*" >&2; exit 1; }
log() { printf '[build_and_push] %s\n' "$*" >&2; }

region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
account=""
train_repo="byoc-train"
serve_repo="byoc-serve"
tag=""
train_torch_index_url="<dockerfile>"   # not given: the Dockerfile's default ('' is a value: PyPI)
serve_torch_index_url="<dockerfile>"
base_image=""
output="image-uris.json"

while [ $# -gt 0 ]; do
  case "$1" in
    --region) region="${2:?--region needs a value}"; shift 2 ;;
    --account) account="${2:?--account needs a value}"; shift 2 ;;
    --train-repo) train_repo="${2:?--train-repo needs a value}"; shift 2 ;;
    --serve-repo) serve_repo="${2:?--serve-repo needs a value}"; shift 2 ;;
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --train-torch-index-url) train_torch_index_url="${2?--train-torch-index-url needs a value}"; shift 2 ;;
    --serve-torch-index-url) serve_torch_index_url="${2?--serve-torch-index-url needs a value}"; shift 2 ;;
    --base-image) base_image="${2:?--base-image needs a value}"; shift 2 ;;
    --output) output="${2:?--output needs a value}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# ---- Preconditions, each with the fix in its message. ----
command -v docker >/dev/null 2>&1 \
  || die "docker is not installed or not on PATH (install Docker Engine or Docker Desktop)"
command -v aws >/dev/null 2>&1 \
  || die "the AWS CLI ('aws') is not installed or not on PATH (https://aws.amazon.com/cli/; or: pip install awscli)"

if [ -z "$region" ]; then
  region="$(aws configure get region 2>/dev/null || true)"
fi
[ -n "$region" ] || die "no AWS region: pass --region or set AWS_REGION"

# With --region: the CLI has no region of its own on a machine without a configured profile.
if ! caller_account="$(aws sts get-caller-identity --region "$region" --query Account --output text 2>&1)"; then
  die "no usable AWS credentials: 'aws sts get-caller-identity' failed:
  ${caller_account}
Configure credentials (aws configure, AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and retry."
fi
account="${account:-$caller_account}"

docker info >/dev/null 2>&1 \
  || die "the Docker engine is not reachable ('docker info' failed): start Docker and retry"

if [ -z "$tag" ]; then
  tag="$(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null || true)"
  [ -n "$tag" ] || die "no git commit to tag with: pass --tag"
fi

case "$region" in
  cn-*) ecr_domain="amazonaws.com.cn" ;;
  *) ecr_domain="amazonaws.com" ;;
esac
registry="${REGISTRY_OVERRIDE:-${account}.dkr.ecr.${region}.${ecr_domain}}"
build_args=()
[ -n "$base_image" ] && build_args+=(--build-arg "BASE_IMAGE=${base_image}")
train_args=(--build-arg "SERVE_IMAGE_URI=${registry}/${serve_repo}:${tag}")
serve_args=()
[ "$train_torch_index_url" != "<dockerfile>" ] && train_args+=(--build-arg "TORCH_INDEX_URL=${train_torch_index_url}")
[ "$serve_torch_index_url" != "<dockerfile>" ] && serve_args+=(--build-arg "TORCH_INDEX_URL=${serve_torch_index_url}")

# ---- ECR: log in, create the repositories when missing. ----
log "logging in to ${registry}"
aws ecr get-login-password --region "$region" \
  | docker login --username AWS --password-stdin "$registry" >/dev/null

for repo in "$train_repo" "$serve_repo"; do
  if ! aws ecr describe-repositories --region "$region" --repository-names "$repo" >/dev/null 2>&1; then
    log "creating ECR repository ${repo}"
    aws ecr create-repository --region "$region" --repository-name "$repo" \
      --image-scanning-configuration scanOnPush=true >/dev/null
  fi
done

# ---- Build, tag (commit + latest), push. ----
build_and_push() {  # $1 = dockerfile, $2 = repository, then this image's build arguments; prints the pushed URI
  local dockerfile="$1" repo="$2" image="${registry}/$2"
  shift 2
  log "building ${image}:${tag} from ${dockerfile}"
  # ${a[@]+"${a[@]}"}: an empty array expands to nothing; bash < 4.4 calls "${a[@]}" unbound.
  docker build --network host --platform linux/amd64 ${build_args[@]+"${build_args[@]}"} "$@" \
    -f "${repo_root}/${dockerfile}" -t "${image}:${tag}" -t "${image}:latest" "$repo_root" >&2
  docker push "${image}:${tag}" >&2
  docker push "${image}:latest" >&2
  printf '%s:%s' "$image" "$tag"
}

train_uri="$(build_and_push docker/train.Dockerfile "$train_repo" ${train_args[@]+"${train_args[@]}"})"
serve_uri="$(build_and_push docker/serve.Dockerfile "$serve_repo" ${serve_args[@]+"${serve_args[@]}"})"

printf '{\n  "train": "%s",\n  "serve": "%s"\n}\n' "$train_uri" "$serve_uri" >"$output"
log "pushed ${train_uri} and ${serve_uri}; URIs written to ${output}"
