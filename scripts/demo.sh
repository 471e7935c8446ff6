#!/usr/bin/env bash
# The end-to-end story on the default data root (volumes/): a customer managed key
# and its alias, the AWS CLI seed lines, envelope encryption with a data key, a year
# of rotation, a disabled key, the AWS managed key, deletion, access control (IAM
# user, identity and key policies, a grant), EBS volumes (encrypted under their own
# data keys, encryption by default, resize, a disabled key), mounting one (FUSE +
# loop + ext4; unmount, mount again, same bytes), a live snapshot copied to
# another region under another key, the volume over NBD, the same services over
# AWS's wire protocols (ebsim serve with the aws CLI), and the audit trail.
# Installs what it needs and builds a release binary first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

say "installing what the demo needs"
ensure_apt bash coreutils openssl ca-certificates gcc
ensure_rust
say "building ebsim (release)"
cargo build --release --locked --quiet
export PATH="$PWD/target/release:$PATH"
unset EBSIM_HOME EBSIM_NOW EBSIM_REGION EBSIM_OUTPUT

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
show() { printf '\n$ %s\n' "$*"; "$@"; }

say "1. A customer managed key and an alias (data root: the checkout's volumes/)"
KEY=$(ebsim kms create-key --description "ebsim demo: cat robot battle plans" \
      --tags TagKey=project,TagValue=catrobot --query KeyMetadata.KeyId --output text)
echo "created key $KEY"
if ebsim kms describe-key --key-id alias/catrobot >/dev/null 2>&1; then
    show ebsim kms update-alias --alias-name alias/catrobot --target-key-id "$KEY"
else
    show ebsim kms create-alias --alias-name alias/catrobot --target-key-id "$KEY"
fi
show ebsim kms describe-key --key-id alias/catrobot --output table \
     --query 'KeyMetadata.{KeyId:KeyId,State:KeyState,Manager:KeyManager,Spec:KeySpec}'

say "2. The seed lines, verbatim with aws replaced by ebsim"
echo "Attack at dawn. Bring the laser pointer." > battleplans.txt
for line in \
  'ebsim kms encrypt --key-id alias/catrobot --plaintext fileb://battleplans.txt --output text --query CiphertextBlob | base64 --decode > not_battleplans.enc' \
  'ebsim kms decrypt --ciphertext-blob fileb://not_battleplans.enc --output text --query Plaintext | base64 --decode > decryptedplans.txt'
do
    printf '\n$ %s\n' "$line"
    eval "$line"
done
cmp battleplans.txt decryptedplans.txt && echo "decryptedplans.txt is identical to battleplans.txt"
echo "the ciphertext is $(stat -c %s not_battleplans.enc) bytes and names its key and backing-key version;"
echo "decrypt needed no --key-id."

say "3. Envelope encryption: a data key bound to an encryption context"
ebsim kms generate-data-key --key-id alias/catrobot --key-spec AES_256 \
      --encryption-context project=catrobot --output text --query '[Plaintext,CiphertextBlob]' > dk.txt
cut -f1 dk.txt | base64 --decode | xxd -p -c 64 > dk.hex
cut -f2 dk.txt | base64 --decode > dk.enc
head -c 1048576 /dev/urandom > bulk.bin
openssl enc -aes-256-ctr -K "$(cat dk.hex)" -iv 00000000000000000000000000000000 -in bulk.bin -out bulk.enc
rm dk.hex dk.txt    # only the wrapped data key is kept beside the data
echo "1 MiB encrypted locally with the data key; the plaintext key is gone, dk.enc kept."
show ebsim kms decrypt --ciphertext-blob fileb://dk.enc --query Plaintext --output text >/dev/null \
  || echo "(without the encryption context KMS refuses, as AWS does)"
KEYHEX=$(ebsim kms decrypt --ciphertext-blob fileb://dk.enc --encryption-context project=catrobot \
         --query Plaintext --output text | base64 --decode | xxd -p -c 64)
openssl enc -d -aes-256-ctr -K "$KEYHEX" -iv 00000000000000000000000000000000 -in bulk.enc | cmp - bulk.bin \
  && echo "with the context: data key unwrapped, 1 MiB decrypted, identical"

say "4. Rotation: a year passes (EBSIM_NOW moves the clock for one command)"
show ebsim kms enable-key-rotation --key-id "$KEY"
NEXT=$(ebsim kms get-key-rotation-status --key-id "$KEY" --query NextRotationDate --output text)
echo "next rotation: $NEXT"
LATER=$(date -u -d "$(echo "$NEXT" | cut -c1-19) +1 day" +%Y-%m-%dT%H:%M:%SZ)
show env EBSIM_NOW="$LATER" ebsim kms list-key-rotations --key-id "$KEY" --output table
show env EBSIM_NOW="$LATER" ebsim kms decrypt --ciphertext-blob fileb://not_battleplans.enc \
     --query '[KeyMaterialId, Plaintext]' --output text
echo "(the year-old ciphertext still decrypts with the material it names)"

say "5. A disabled key stops every cryptographic call"
show ebsim kms disable-key --key-id "$KEY"
show ebsim kms encrypt --key-id alias/catrobot --plaintext fileb://battleplans.txt || true
show ebsim kms enable-key --key-id "$KEY"

say "6. The AWS managed key alias/aws/ebs: created on first use, not for direct use"
show ebsim kms describe-key --key-id alias/aws/ebs --query 'KeyMetadata.[KeyId,KeyManager,Description]' --output text
show ebsim kms encrypt --key-id alias/aws/ebs --plaintext fileb://battleplans.txt || true

say "7. Deletion: seven days pending, then gone with everything it encrypted"
DOOMED=$(ebsim kms create-key --description "ebsim demo: doomed" --query KeyMetadata.KeyId --output text)
ebsim kms encrypt --key-id "$DOOMED" --plaintext fileb://battleplans.txt --query CiphertextBlob --output text | base64 --decode > doomed.enc
show ebsim kms schedule-key-deletion --key-id "$DOOMED" --pending-window-in-days 7 --output text
show ebsim kms decrypt --ciphertext-blob fileb://doomed.enc || true
GONE=$(date -u -d "+8 days" +%Y-%m-%dT%H:%M:%SZ)
show env EBSIM_NOW="$GONE" ebsim kms describe-key --key-id "$DOOMED" || true
show env EBSIM_NOW="$GONE" ebsim kms decrypt --ciphertext-blob fileb://doomed.enc || true

say "8. Access control: an IAM user, an identity policy, a key policy deny, a grant"
ebsim iam get-user --user-name alice >/dev/null 2>&1 || show ebsim iam create-user --user-name alice --query User.Arn --output text
cat > use-keys.json <<'JSON'
{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"], "Resource": "*"}}
JSON
show ebsim iam put-user-policy --user-name alice --policy-name use-keys --policy-document file://use-keys.json
ebsim configure set principal arn:aws:iam::111122223333:user/alice --profile alice
show ebsim --profile alice kms encrypt --key-id alias/catrobot --plaintext fileb://battleplans.txt --query KeyId --output text
show ebsim --profile alice kms disable-key --key-id "$KEY" || true
cat > policy.json <<'JSON'
{"Version": "2012-10-17", "Statement": [
  {"Sid": "Enable IAM User Permissions", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
  {"Sid": "No decrypt outside EC2", "Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::111122223333:user/alice"}, "Action": "kms:Decrypt", "Resource": "*",
   "Condition": {"StringNotEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}}}]}
JSON
show ebsim kms put-key-policy --key-id "$KEY" --policy file://policy.json
show ebsim --profile alice kms decrypt --ciphertext-blob fileb://not_battleplans.enc || true
ebsim iam get-user --user-name host >/dev/null 2>&1 || ebsim iam create-user --user-name host >/dev/null
show ebsim kms create-grant --key-id "$KEY" --grantee-principal arn:aws:iam::111122223333:user/host \
     --operations GenerateDataKeyWithoutPlaintext --constraints 'EncryptionContextSubset={aws:ebs:id=vol-0demo}' --output text
show ebsim --principal arn:aws:iam::111122223333:user/host kms generate-data-key-without-plaintext --key-id "$KEY" \
     --number-of-bytes 64 --encryption-context aws:ebs:id=vol-0demo --query KeyId --output text
show ebsim --principal arn:aws:iam::111122223333:user/host kms generate-data-key-without-plaintext --key-id "$KEY" \
     --number-of-bytes 64 --encryption-context aws:ebs:id=vol-0other --query KeyId --output text || true

say "9. EBS volumes: sparse images, each under its own data key that the KMS wraps"
VKEY=$(ebsim kms create-key --description "ebsim demo: volumes" --query KeyMetadata.KeyId --output text)
VOL=$(ebsim ec2 create-volume --size 8 --encrypted --kms-key-id "$VKEY" \
      --tag-specifications 'ResourceType=volume,Tags=[{Key=Name,Value=demo-db}]' --query VolumeId --output text)
show ebsim ec2 describe-volumes --volume-ids "$VOL" --output table \
     --query 'Volumes[].{Id:VolumeId,GiB:Size,Encrypted:Encrypted,State:State,Type:VolumeType}'
img="$(cd "$OLDPWD" && pwd)/volumes/regions/us-east-1/volumes/$VOL.img"
echo "image $img: $(du -h --apparent-size "$img" | cut -f1) apparent, $(du -h "$img" | cut -f1) on disk"
show ebsim cloudtrail lookup-events --max-results 1 --output text \
     --lookup-attributes AttributeKey=EventName,AttributeValue=GenerateDataKeyWithoutPlaintext \
     --query 'Events[].[EventName, Username]'
echo "(the volume service asked KMS for the 64-byte data key on root's behalf)"
show ebsim ec2 enable-ebs-encryption-by-default
VOL2=$(ebsim ec2 create-volume --size-bytes 67108864 --query VolumeId --output text)
show ebsim ec2 describe-volumes --volume-ids "$VOL2" --query 'Volumes[0].[Encrypted, KmsKeyId]' --output text
echo "(encryption by default: the AWS managed key alias/aws/ebs)"
show ebsim ec2 disable-ebs-encryption-by-default
show ebsim ec2 modify-volume --volume-id "$VOL" --size 16 --query 'VolumeModification.[OriginalSize,TargetSize]' --output text
show ebsim kms disable-key --key-id "$VKEY"
show ebsim ec2 create-volume --size 1 --encrypted --kms-key-id "$VKEY" || true
show ebsim kms enable-key --key-id "$VKEY"
show ebsim ec2 delete-volume --volume-id "$VOL"
show ebsim ec2 delete-volume --volume-id "$VOL2"

say "10. Mount an encrypted volume: FUSE file, loop device, ext4 — then unmount and mount again"
if [ "$(id -u)" -eq 0 ] && [ -e /dev/fuse ]; then
    ensure_apt fuse3 e2fsprogs util-linux mount
    VOL=$(ebsim ec2 create-volume --size 1 --encrypted --kms-key-id "$VKEY" --query VolumeId --output text)
    mkdir -p "$work/db"
    show ebsim mount "$VOL" "$work/db" --mkfs ext4 --query '[LoopDevice, MountPoint]' --output text
    show df -h "$work/db"
    cp battleplans.txt "$work/db/" && head -c 8M /dev/urandom > "$work/db/blob.bin"
    show sha256sum "$work/db/battleplans.txt" "$work/db/blob.bin"
    sums=$(cd "$work/db" && sha256sum battleplans.txt blob.bin)
    show ebsim unmount "$work/db" --query State --output text
    show ebsim ec2 describe-volumes --volume-ids "$VOL" --query 'Volumes[0].State' --output text
    show ebsim mount "$VOL" "$work/db" --query MountPoint --output text
    (cd "$work/db" && echo "$sums" | sha256sum -c)
    img="$(cd "$OLDPWD" && pwd)/volumes/regions/us-east-1/volumes/$VOL.img"
    if grep -q "Attack at dawn" "$img"; then echo "PLAINTEXT FOUND IN THE IMAGE"; exit 1; fi
    echo "(the image $img holds only ciphertext: no 'Attack at dawn' in it)"
    show ebsim unmount "$work/db" --query State --output text
    show ebsim ec2 delete-volume --volume-id "$VOL"
else
    echo "skipped: ebsim mount needs root and /dev/fuse (run the demo with sudo)"
fi

say "11. Snapshot, copy to us-west-2 under another key, a volume there: byte-identical"
if [ "$(id -u)" -eq 0 ] && [ -e /dev/fuse ]; then
    VOL=$(ebsim ec2 create-volume --size-bytes 67108864 --encrypted --kms-key-id "$VKEY" --query VolumeId --output text)
    mkdir -p "$work/att" "$work/west"
    ebsim ec2 attach-volume --volume-id "$VOL" --fuse "$work/att" >/dev/null
    head -c 16M /dev/urandom | dd of="$work/att/$VOL" bs=1M seek=8 conv=notrunc,fsync status=none
    want=$(sha256sum < "$work/att/$VOL" | cut -d' ' -f1)
    show ebsim ec2 create-snapshot --volume-id "$VOL" --description "demo: live snapshot" \
         --query '[SnapshotId, State, BlockCount]' --output text
    SNAP=$(ebsim ec2 describe-snapshots --filters Name=volume-id,Values="$VOL" --query 'Snapshots[0].SnapshotId' --output text)
    ebsim ec2 detach-volume --volume-id "$VOL" >/dev/null
    WKEY=$(ebsim --region us-west-2 kms create-key --description "ebsim demo: west" --query KeyMetadata.Arn --output text)
    show ebsim --region us-west-2 ec2 copy-snapshot --source-region us-east-1 --source-snapshot-id "$SNAP" \
         --encrypted --kms-key-id "$WKEY"
    COPY=$(ebsim --region us-west-2 ec2 describe-snapshots --filters Name=kms-key-id,Values="$WKEY" --query 'Snapshots[0].SnapshotId' --output text)
    WVOL=$(ebsim --region us-west-2 ec2 create-volume --snapshot-id "$COPY" --query VolumeId --output text)
    show ebsim --region us-west-2 ec2 describe-volumes --volume-ids "$WVOL" --output table \
         --query 'Volumes[].{Id:VolumeId,Zone:AvailabilityZone,Snapshot:SnapshotId,Encrypted:Encrypted}'
    show ebsim kms disable-key --key-id "$VKEY"
    echo "(key A in us-east-1 is disabled; the us-west-2 volume is under key B)"
    ebsim --region us-west-2 ec2 attach-volume --volume-id "$WVOL" --fuse "$work/west" >/dev/null
    got=$(sha256sum < "$work/west/$WVOL" | cut -d' ' -f1)
    ebsim --region us-west-2 ec2 detach-volume --volume-id "$WVOL" >/dev/null
    [ "$got" = "$want" ] && echo "us-west-2 volume is byte-identical to the us-east-1 one: sha256 $got"
    ebsim kms enable-key --key-id "$VKEY"
    ebsim ec2 delete-volume --volume-id "$VOL"; ebsim --region us-west-2 ec2 delete-volume --volume-id "$WVOL"
    ebsim ec2 delete-snapshot --snapshot-id "$SNAP"; ebsim --region us-west-2 ec2 delete-snapshot --snapshot-id "$COPY"
else
    echo "skipped: attaching needs root and /dev/fuse (run the demo with sudo)"
fi

say "12. The volume over NBD: nbdinfo, nbdcopy in over four connections, the real allocation map"
ensure_apt libnbd-bin qemu-utils
VOL=$(ebsim ec2 create-volume --size-bytes 67108864 --encrypted --kms-key-id "$VKEY" --query VolumeId --output text)
URI=$(ebsim ec2 attach-volume --volume-id "$VOL" --nbd "unix:$work/nbd.sock" --query NbdUri --output text)
echo "$URI"
show nbdinfo --can multi-conn "$URI" && echo "(CAN_MULTI_CONN: every connection shares one image and one flush)"
head -c 24M /dev/urandom > "$work/disk.raw" && truncate -s 64M "$work/disk.raw"
show nbdcopy -C 4 --flush "$work/disk.raw" "$URI"
show nbdinfo --map "$URI"
show qemu-img compare -f raw -F raw "$work/disk.raw" "$URI"
show ebsim ec2 detach-volume --volume-id "$VOL" --query State --output text
ebsim ec2 delete-volume --volume-id "$VOL"

say "13. The same services over AWS's own wire protocols: ebsim serve, the aws CLI, SigV4"
ensure_apt awscli libnbd-bin
read -r AKID SECRET < <(ebsim iam create-access-key --output text \
    --query 'AccessKey.[AccessKeyId,SecretAccessKey]')
ebsim serve --listen 127.0.0.1:0 > "$work/serve.out" 2> "$work/serve.log" &
SERVE=$!
for _ in $(seq 100); do grep -q 'listening on' "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
EP=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/serve.out" | head -1)
echo "ebsim serve: $EP (pid $SERVE)"
wire() { AWS_ACCESS_KEY_ID=$AKID AWS_SECRET_ACCESS_KEY=$SECRET AWS_DEFAULT_REGION=us-east-1 \
         AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null /usr/bin/aws --endpoint-url "$EP" "$@"; }
show wire sts get-caller-identity --query Arn --output text
echo "attack at dawn" > "$work/wire.txt"
wire kms encrypt --key-id alias/catrobot --plaintext "fileb://$work/wire.txt" --output text --query CiphertextBlob | base64 -d > "$work/wire.enc"
printf '\n$ aws --endpoint-url %s kms decrypt --ciphertext-blob fileb://wire.enc --output text --query Plaintext | base64 -d\n' "$EP"
wire kms decrypt --ciphertext-blob "fileb://$work/wire.enc" --output text --query Plaintext | base64 -d
INST=$(wire ec2 run-instances --image-id ami-12345678 --count 1 --query 'Instances[0].InstanceId' --output text)
WVOL=$(wire ec2 create-volume --availability-zone us-east-1a --size 1 --encrypted --query VolumeId --output text)
wire ec2 wait volume-available --volume-ids "$WVOL"
show wire ec2 attach-volume --volume-id "$WVOL" --instance-id "$INST" --device /dev/sdf --query State --output text
DEV="$(cd "$OLDPWD" && pwd)/volumes/regions/us-east-1/instances/$INST/sdf.sock"
show nbdinfo --size "nbd+unix:///$WVOL?socket=$DEV"
show wire ec2 describe-instances --instance-ids "$INST" \
     --query 'Reservations[0].Instances[0].BlockDeviceMappings[0].[DeviceName,Ebs.VolumeId]' --output text
show wire ec2 terminate-instances --instance-ids "$INST" --query 'TerminatingInstances[0].CurrentState.Name' --output text
wire ec2 wait volume-available --volume-ids "$WVOL"
wire ec2 delete-volume --volume-id "$WVOL"
kill -TERM "$SERVE"; wait "$SERVE" || true
ebsim iam delete-access-key --access-key-id "$AKID"

say "14. The audit trail (CloudTrail LookupEvents)"
show env EBSIM_NOW="$GONE" ebsim cloudtrail lookup-events --max-results 12 --output table \
     --query 'Events[].{Time:EventTime,Event:EventName,User:Username}'
echo
echo "State lives in $(cd "$OLDPWD" && pwd)/volumes (root key, sealed KMS store, audit log)."
echo "demo finished."
