#!/usr/bin/env bash
# The pull path end to end inside the compose network: load sample DICOM into Orthanc, index it by
# C-FIND, pull it by C-GET and by C-MOVE, and index the STORE as a folder. Outputs in /data.
set -euo pipefail
PACS_HOST=${PACS_HOST:-orthanc}
PACS_PORT=${PACS_PORT:-4242}
PACS_AET=${PACS_AET:-ORTHANC}
OUR_AET=${OUR_AET:-MODANPACS}
OUT=${OUT:-/data}
DICOMWEB_URL=${DICOMWEB_URL:-http://${PACS_HOST}:8042/dicom-web}

echo "waiting for ${PACS_AET}@${PACS_HOST}:${PACS_PORT} ..."
python - <<PY
from modan_pacs.pacs import echo, make_settings
s = make_settings(host="${PACS_HOST}", port=${PACS_PORT}, called_aet="${PACS_AET}", calling_aet="${OUR_AET}",
                  retries=8, backoff=1.0)
print(f"C-ECHO ok in {echo(s) * 1000:.1f} ms")
PY

SAMPLES=$(python -c "import pathlib, pydicom.data as d; print(pathlib.Path(d.get_testdata_file('CT_small.dcm')).parent / 'dicomdirtests')")
python -c "from modan_pacs.pacs.send import main; raise SystemExit(main())" \
  --host "$PACS_HOST" --port "$PACS_PORT" --called-aet "$PACS_AET" --calling-aet "$OUR_AET" "$SAMPLES"

modan-pacs index --pacs "${PACS_HOST}:${PACS_PORT}" --called-aet "$PACS_AET" --calling-aet "$OUR_AET" \
  --level image --out "$OUT/pacs_index" --salt-file "$HOME/.modan-pacs-salt"
modan-pacs pull --index "$OUT/pacs_index" --out "$OUT/store_get" --workers 2
modan-pacs pull --index "$OUT/pacs_index" --out "$OUT/store_move" --method move --move-port 11113
MODAN_PACS_DICOMWEB_USER=${ORTHANC_USER:-modan} MODAN_PACS_DICOMWEB_PASSWORD=${ORTHANC_PASSWORD:-modan} \
  modan-pacs pull --index "$OUT/pacs_index" --out "$OUT/store_web" --dicomweb "$DICOMWEB_URL"
modan-pacs index "$OUT/store_get" --out "$OUT/store_index" --salt-file "$HOME/.modan-pacs-salt"
echo "done: see $OUT (pacs_index, store_get, store_move, store_web, store_index)"
