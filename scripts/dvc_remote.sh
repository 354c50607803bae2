#!/usr/bin/env bash
# Configure the default DVC remote that `dvc push` / `dvc pull` (and the
# pipeline flow's pull/push parameters) use for shards and models.
#
#   scripts/dvc_remote.sh                      # local folder ../s2p-dvc-remote (default)
#   scripts/dvc_remote.sh /mnt/nfs/s2p-remote  # any folder every machine can see
#   scripts/dvc_remote.sh s3://bucket/s2p      # S3: pip install dvc-s3; credentials from
#                                              # the usual AWS env/profile, or
#                                              # dvc remote modify --local s2p access_key_id ...
#   (gs://, azure://, ssh://, webdav:// work the same with dvc-gs, dvc-azure, dvc-ssh, ...)
#
# Environment: S2P_DVC_REMOTE (URL, when no argument), S2P_DVC_REMOTE_NAME
# (default "s2p"), S2P_DVC_CONFIG_LEVEL ("project" = .dvc/config, shared via git;
# "local" = .dvc/config.local, this checkout only).
set -euo pipefail
url="${1:-${S2P_DVC_REMOTE:-../s2p-dvc-remote}}"
name="${S2P_DVC_REMOTE_NAME:-s2p}"
level="${S2P_DVC_CONFIG_LEVEL:-project}"
dvc="${DVC:-dvc}"

case "$level" in
  project) where=() ;;
  local) where=(--local) ;;
  *) echo "error: S2P_DVC_CONFIG_LEVEL=$level: expected project or local" >&2; exit 2 ;;
esac

case "$url" in
  *://*)
    scheme="${url%%://*}"
    case "$scheme" in
      s3) plugin=dvc_s3 ;; gs|gcs) plugin=dvc_gs ;; azure) plugin=dvc_azure ;;
      ssh) plugin=dvc_ssh ;; http|https) plugin=dvc_http ;; webdav|webdavs) plugin=dvc_webdav ;;
      hdfs) plugin=dvc_hdfs ;; *) plugin= ;;
    esac
    # `dvc remote add` accepts any URL; fail now rather than at the first push.
    if [ -n "$plugin" ] && ! "${PYTHON:-python}" -c "import $plugin" 2>/dev/null; then
      echo "error: $url needs the ${plugin//_/-} package (pip install ${plugin//_/-})" >&2
      exit 2
    fi
    ;;
  *)
    # A local folder: create it so the first push does not fail on a typo'd parent,
    # and record it absolute: DVC reads a relative URL from the config file's folder
    # (.dvc/), so a committed relative path would point elsewhere in every clone.
    mkdir -p "$url"
    url="$(cd "$url" && pwd -P)"
    ;;
esac

"$dvc" remote add "${where[@]}" --force --default "$name" "$url"
echo "DVC default remote '$name' -> $url ($level config)"
"$dvc" remote list "${where[@]}"
