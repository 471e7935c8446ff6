# Time moves: EBSIM_NOW pins one command's clock; `ebsim clock advance` moves the data root's.
KEY=$(ebsim kms create-key --query KeyMetadata.KeyId --output text)
printf 'from 2026' > p.bin
ebsim kms encrypt --key-id $KEY --plaintext fileb://p.bin --query CiphertextBlob --output text | base64 --decode > old.enc
t "ebsim kms enable-key-rotation --key-id $KEY"
t "ebsim kms get-key-rotation-status --key-id $KEY"
t "EBSIM_NOW=2026-12-31T23:59:59Z ebsim kms list-key-rotations --key-id $KEY"
t "EBSIM_NOW=2027-01-01T00:00:00Z ebsim kms list-key-rotations --key-id $KEY"
t "EBSIM_NOW=2027-01-01T00:00:01Z ebsim kms rotate-key-on-demand --key-id $KEY"
t "EBSIM_NOW=2027-01-01T00:00:02Z ebsim kms list-key-rotations --key-id $KEY --include-key-material ALL_KEY_MATERIAL --output text"
t "EBSIM_NOW=2027-01-02T00:00:00Z ebsim kms decrypt --ciphertext-blob fileb://old.enc --query Plaintext --output text | base64 --decode; echo"
t "EBSIM_NOW=2027-01-02T00:00:00Z ebsim kms get-key-rotation-status --key-id $KEY --query NextRotationDate"
# Deletion: seven days pending, then gone for good.
t "EBSIM_NOW=2027-01-02T00:00:00Z ebsim kms schedule-key-deletion --key-id $KEY --pending-window-in-days 7"
t "EBSIM_NOW=2027-01-08T23:59:59Z ebsim kms describe-key --key-id $KEY --query KeyMetadata.[KeyState,DeletionDate] --output text"
t "EBSIM_NOW=2027-01-09T00:00:00Z ebsim kms describe-key --key-id $KEY"
t "EBSIM_NOW=2027-01-09T00:00:00Z ebsim kms decrypt --ciphertext-blob fileb://old.enc"
t "EBSIM_NOW=2027-01-09T00:00:00Z ebsim cloudtrail lookup-events --lookup-attributes AttributeKey=EventName,AttributeValue=DeleteKey --query 'Events[].[EventName,EventTime,Username]' --output text"
t "EBSIM_NOW=2027-01-09T00:00:00Z ebsim cloudtrail lookup-events --lookup-attributes AttributeKey=EventName,AttributeValue=Decrypt --query 'Events[].[EventTime,ReadOnly]' --output text"
# The persistent clock (an ebsim extension).
t 'env -u EBSIM_NOW ebsim clock advance --days 400 --query OffsetSeconds'
t 'env -u EBSIM_NOW ebsim clock reset --query OffsetSeconds'
