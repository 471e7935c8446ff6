# --output json|text|table, --query, and global options before or after the service.
KEY=$(ebsim kms create-key --description "formats" --tags TagKey=team,TagValue=storage TagKey=env,TagValue=demo --query KeyMetadata.KeyId --output text)
ebsim kms create-alias --alias-name alias/formats --target-key-id $KEY
t "ebsim kms list-resource-tags --key-id $KEY"
t "ebsim kms list-resource-tags --key-id $KEY --output text"
t "ebsim kms list-resource-tags --key-id $KEY --output table"
t "ebsim --output text kms get-key-rotation-status --key-id $KEY"
t "ebsim kms describe-key --key-id alias/formats --output table --query 'KeyMetadata.{Description:Description,State:KeyState,Algorithms:EncryptionAlgorithms}'"
t "ebsim kms list-aliases --output text --query \"Aliases[?starts_with(AliasName, 'alias/aws/')] | length(@)\""
t 'ebsim kms list-aliases --page-size 3 --query "Aliases[].AliasName" --output text'
t 'ebsim kms list-aliases --limit 2 --query "[Truncated, length(Aliases)]" --output text'
t 'ebsim kms generate-random --number-of-bytes 16 --query "length(Plaintext)"'
t 'ebsim kms encrypt --key-id alias/formats --plaintext aGVsbG8= --query "length(CiphertextBlob) > \`60\`"'
t 'ebsim kms encrypt --key-id alias/formats --cli-binary-format raw-in-base64-out --plaintext hello --output text --query CiphertextBlob | base64 --decode > h.enc && ebsim kms decrypt --ciphertext-blob fileb://h.enc --query Plaintext --output text | base64 --decode; echo'
t 'ebsim kms generate-data-key --key-id alias/formats --key-spec AES_256 --encryption-context "{\"aws:ebs:id\": \"vol-0abc\"}" --query "[KeyId, length(Plaintext)]" --output text'
t 'ebsim kms list-keys --region us-west-2'
t 'ebsim --region eu-west-1 kms list-keys --output text'
